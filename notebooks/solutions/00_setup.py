"""Solutions to the exercises of notebooks/00_setup.ipynb.  Run: python notebooks/solutions/00_setup.py"""

import os
import platform
from unittest import mock

import ftkit
from ftkit.course import check_environment, environment
from ftkit.local.inference import weights

# ★ Which torch, and is it a CPU build?
versions = dict(zip(environment()["component"], environment()["version"]))
torch_version = versions["torch"]
print(f"torch {torch_version}: {'CPU build' if torch_version.endswith('+cpu') else 'not marked as a CPU build'}")

# ★★ Could I run the tests? And a what-if with an old transformers.
dev_problems = check_environment(extras=("dev",), check_model_weights=False)
print("dev tools:", "all present" if not dev_problems else [str(p) for p in dev_problems])
what_if = check_environment(
    extras=("local",),
    requirements=['torch>=2.2; extra == "local"', 'transformers>=4.46; extra == "local"'],
    version_of={"torch": "2.13.0+cpu", "transformers": "4.30.0"}.get,
    check_model_weights=False,
)
assert [(p.package, p.problem, p.needed_for) for p in what_if] == [("transformers", "too old", "local")]
print("what-if:", what_if[0])


# ★★★ A bug report that never leaks a key.
def bug_report() -> str:
    info = ftkit.backend_info()
    status = weights.status()
    problems = check_environment()
    lines = [
        f"python {platform.python_version()}, ftkit {ftkit.__version__}",
        f"backend: {info.name} ({info.reason})",
        f"local model: installed={status['installed']} cached={status['cached']}",
        "environment: " + ("ok" if not problems else "; ".join(map(str, problems))),
    ]
    return "\n".join(lines)


secret = "sk-test-" + "x" * 20  # a fake key, only inside this check
with mock.patch.dict(os.environ, {"OPENAI_API_KEY": secret}):
    report = bug_report()
assert secret not in report
print(report)
