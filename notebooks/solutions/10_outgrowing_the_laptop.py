"""Solutions to the exercises of notebooks/10_outgrowing_the_laptop.ipynb.

Run from the repository root:

    .venv/bin/python notebooks/solutions/10_outgrowing_the_laptop.py [--quick]

It uses the course's fine-tuned triage model (``ftkit.course.triage_job``: the one notebook 04
trained, or it trains it once) on the local backend and writes recipes to a scratch folder it
deletes at the end. Nothing is trained with TRL here: the recipes are written and read.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import ftkit
from ftkit import data, reinforcement
from ftkit.course import data_path, triage_job
from ftkit.local import control, recipes
from ftkit.local.inference import weights


def exercise_1(work: Path) -> dict:
    """★ A recipe for a job not run yet: the full ticket data, epochs "auto"."""
    shutil.copyfile(data_path("tickets", "train.jsonl"), work / "train.jsonl")
    spec = {"model": weights.DEFAULT_BASE_MODEL, "training_file": "train.jsonl", "seed": 42,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto"}}}}
    (work / "job.json").write_text(json.dumps(spec))
    job = recipes.recipe_from_spec(work / "job.json", control.home_dir())
    recipe = recipes.load_recipe(recipes.write_recipe(job, work / "full-recipe"))
    print(f"   {job.n_examples} examples -> {recipe['hyperparameters']}; {recipe['total_steps']} optimiser steps, "
          f"warm-up over {recipe['trl']['args']['warmup_steps']} of them")
    return recipe


def exercise_2(client, job, work: Path) -> dict:
    """★★ The RFT recipe of notebook 07's job (as a spec on the SFT model) and its reward function."""
    from transformers import AutoTokenizer

    settings = reinforcement.rft_settings()
    data.write_jsonl(settings.training_examples(), work / "rft.jsonl")
    spec = {"model": job.fine_tuned_model, "training_file": "rft.jsonl", "seed": settings.seed,
            "suffix": settings.suffix, "method": settings.method()}
    (work / "rft.json").write_text(json.dumps(spec))
    rft_job = recipes.recipe_from_spec(work / "rft.json", control.home_dir())
    recipe = recipes.load_recipe(recipes.write_recipe(rft_job, work / "rft-recipe"))
    args, hp = recipe["trl"]["args"], recipe["hyperparameters"]
    print(f"   job batch_size {hp['batch_size']} prompts x {args['num_generations']} samples each = GRPOConfig "
          f"per_device_train_batch_size {args['per_device_train_batch_size']}: TRL counts completions, the job prompts")
    print(f"   starts from {job.fine_tuned_model}: its adapter travels as {recipe['start_adapter']}/")
    tokenizer = AutoTokenizer.from_pretrained(weights.ensure_cached(progress=None))
    line = settings.training_examples()[0]
    answers = reinforcement.sample_answers(line)
    ids = [tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in answers.values()]
    reward = recipes.grader_reward(recipe["grader"], tokenizer)
    scores = reward(completion_ids=ids, ftkit_item=[json.dumps(line)] * len(ids))
    from ftkit import graders

    direct = [r.reward for r in graders.grade_many(recipe["grader"], list(answers.values()), [line] * len(ids))]
    for (name, _), score in zip(answers.items(), scores):
        print(f"   {name:28} reward {score:.2f}")
    assert scores == direct, "the reward function must give the grader's scores"
    return recipe


def exercise_3(recipe: dict) -> None:
    """★★ Eight GPUs, and three."""
    batch = recipe["trl"]["args"]["per_device_train_batch_size"]
    for gpus in (8, 3):
        if batch % gpus:
            print(f"   {gpus} GPUs: a batch of {batch} does not split into equal parts -> train.py stops. Keep the job's "
                  f"global batch with a GPU count that divides it ({[g for g in range(1, batch + 1) if batch % g == 0]}); "
                  f"a batch of {math.ceil(batch / gpus) * gpus} on {gpus} GPUs is another run (scale the learning rate "
                  "and compare with the evaluation)")
        else:
            print(f"   {gpus} GPUs: {batch // gpus} example(s) per GPU per step, global batch {batch} as the job's")


def exercise_4(recipe_dir: Path) -> None:
    """★★★ A bigger model: what changes in recipe.json and what must stay for the import back."""
    recipe = recipes.load_recipe(recipe_dir)
    recipe["base_model"]["load_from"] = "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    (recipe_dir / recipes.RECIPE_FILE).write_text(json.dumps(recipe, indent=2))
    shapes = recipes._base_module_shapes(recipe["base_model"]["local_source"])
    q = next(v for k, v in shapes.items() if k.endswith("layers.0.self_attn.q_proj"))
    print("   changes: base_model.load_from (or train.py --model); the same tokenizer and chat template, so the "
          "data and labels do not change")
    print(f"   stays for the import back: the base the adapter is registered on. The 135M base's q_proj is "
          f"{q[0]} x {q[1]}; a 1.7B adapter's is 2048 wide, so import-adapter --base SmolLM2-135M-Instruct refuses it. "
          "Register the 1.7B model first (python -m ftkit.local register-model SmolLM2-1.7B-Instruct DIR), then "
          "import-adapter --base SmolLM2-1.7B-Instruct")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the quick-mode triage model")
    args = parser.parse_args(argv)
    client = ftkit.client()
    job = triage_job(client, quick=args.quick or None)
    work = Path(tempfile.mkdtemp(prefix="ftkit-11-solutions-"))
    try:
        print("★ 1.")
        exercise_1(work)
        print("★★ 2.")
        exercise_2(client, job, work)
        print("★★ 3.")
        course = recipes.load_recipe(recipes.write_recipe(recipes.recipe_from_job(job.id, control.home_dir()),
                                                          work / "course-recipe"))
        exercise_3(course)
        print("★★★ 4.")
        exercise_4(work / "course-recipe")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
