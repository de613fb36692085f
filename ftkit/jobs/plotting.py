"""Plotting a job's metrics: :func:`plot_metrics` (loss and accuracy, DPO's margins, RFT's rewards).

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

from .. import lifecycle
from .reading import method_of_metrics


def _draw_metric(ax, df, checkpoints_df, *, train_col: str, valid_col: str, full_col: str, name: str,
                 window: int, colours=("C0", "C1", "C3"), checkpoint_lines: bool = True) -> None:
    """One metric on one axis: every training step (with its moving average over ``window``
    steps when ``window``), the validation batches (dots), a dotted line per checkpoint and the
    full validation at checkpoints (squares)."""
    steps = df["step"] if "step" in df else []
    n = len(df)
    train_colour, valid_colour, full_colour = colours
    if train_col in df and df[train_col].notna().any():
        ax.plot(steps, df[train_col], color=train_colour, lw=1, alpha=0.45 if window else 1.0, label=f"train {name}",
                marker="." if n <= 30 else None)
        if window:
            avg = df[train_col].rolling(window, min_periods=1, center=True).mean()
            ax.plot(steps, avg, color=train_colour, lw=2, label=f"train {name} ({window}-step average)")
    if valid_col in df and df[valid_col].notna().any():
        v = df[[valid_col]].assign(step=steps).dropna()
        ax.plot(v["step"], v[valid_col], "o-", color=valid_colour, ms=4, lw=1.2, label=f"validation {name}")
    if checkpoint_lines and checkpoints_df is not None and len(checkpoints_df):
        for i, step in enumerate(checkpoints_df["step"]):
            ax.axvline(step, color="grey", ls=":", lw=1, label="checkpoint" if i == 0 else None)
    if checkpoints_df is not None and len(checkpoints_df) and full_col in checkpoints_df \
            and checkpoints_df[full_col].notna().any():
        c = checkpoints_df[["step", full_col]].dropna()
        ax.plot(c["step"], c[full_col], "s", color=full_colour, ms=7, label=f"full validation {name}")


def _finish_axis(ax, df, *, ylabel: str, title: str, total_steps: int | None) -> None:
    steps = df["step"] if "step" in df else []
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if total_steps:
        ax.set_xlim(0, max(int(total_steps), int(max(steps, default=0))) + 0.5)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_metrics(results_df, checkpoints_df=None, *, title: str | None = None, smooth: int | None = None,
                 total_steps: int | None = None, method: str | None = None):
    """Training curves against step, for the job's method. Returns the matplotlib Figure.

    * **Supervised** (two panels): loss and token accuracy. Lines: ``train loss`` / ``train token
      accuracy`` (every step), ``validation loss`` / ``validation token accuracy`` (measured on a
      validation batch at some steps, dots) and, with ``checkpoints_df``, ``full validation
      loss`` / ``full validation token accuracy`` at each checkpoint (squares, the whole
      validation file).
    * **DPO** (four panels): the DPO loss; the **reward margin** (how much more the model prefers
      the preferred answer than the reference model did: above 0 is the right way); the
      **preference accuracy** (the share of pairs where the preferred answer has the higher
      reward); and the **chosen and rejected rewards** apart -- lines named the same way
      (``train reward margin``, ``validation preference accuracy``, ``full validation reward
      margin`` ...).
    * **Reinforcement** (three panels): the **reward** -- ``train reward`` (the mean grader score
      of the answers sampled at each step) with a band of ± one standard deviation across them,
      ``validation reward`` (greedy answers to ``eval_samples`` validation prompts, every
      ``eval_interval`` steps) and ``full validation reward`` at checkpoints; the **answer
      length** in tokens; and the **grader errors** (answers that could not be scored, e.g.
      invalid JSON for ``output_json``). The policy-gradient loss is not drawn: with advantages
      normalised within each group it stays near 0 whatever the model learns.

    Training lines get a moving average over ``smooth`` steps (default about a twentieth of the
    run) when there are 40 steps or more; a dotted vertical line marks each checkpoint.
    ``total_steps`` fixes the step axis to the whole run (the live monitor's chart then grows from
    left to right). ``method`` defaults to what the columns carry (:func:`method_of_metrics`).

    Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb;
    reinforcement: notebooks/07_reinforcement_fine_tuning.ipynb).
    """
    from matplotlib.figure import Figure

    df = results_df
    ckpt_columns = list(checkpoints_df.columns) if checkpoints_df is not None else []
    method = method or method_of_metrics([*df.columns, *ckpt_columns])
    n = len(df)
    window = smooth if smooth is not None else (max(3, n // 20) if n >= 40 else 0)
    if method == lifecycle.DPO:
        fig = Figure(figsize=(12, 7.6), layout="constrained")
        axes = [fig.add_subplot(2, 2, i) for i in range(1, 5)]
        panels = ((axes[0], "loss", "DPO loss"), (axes[1], "reward_margin", "Reward margin (chosen - rejected)"),
                  (axes[2], "preference_accuracy", "Preference accuracy"))
        axes[1].axhline(0, color="black", lw=0.8)
        axes[2].axhline(0.5, color="black", lw=0.8, ls="--", label="chance (0.5)")
        axes[3].axhline(0, color="black", lw=0.8)
        for ax, quantity, heading in panels:
            name = quantity.replace("_", " ")
            _draw_metric(ax, df, checkpoints_df, train_col=f"train_{quantity}", valid_col=f"valid_{quantity}",
                         full_col=f"full_valid_{quantity}", name=name, window=window)
            _finish_axis(ax, df, ylabel=name, title=heading, total_steps=total_steps)
        rewards = axes[3]
        for quantity, colour in (("chosen_reward", "C2"), ("rejected_reward", "C3")):
            _draw_metric(rewards, df, checkpoints_df, train_col=f"train_{quantity}", valid_col=f"valid_{quantity}",
                         full_col=f"full_valid_{quantity}", name=quantity.replace("_", " "), window=window,
                         colours=(colour, colour, colour), checkpoint_lines=quantity == "chosen_reward")
        axes[2].set_ylim(-0.02, 1.05)
        _finish_axis(rewards, df, ylabel="reward (beta x log-ratio to the reference)",
                     title="Chosen and rejected rewards", total_steps=total_steps)
    elif method == lifecycle.REINFORCEMENT:
        fig = Figure(figsize=(13, 4.2), layout="constrained")
        reward_ax, length_ax, errors_ax = (fig.add_subplot(1, 3, i) for i in range(1, 4))
        steps = df["step"] if "step" in df else []
        if "train_reward_mean" in df and "train_reward_std" in df and df["train_reward_std"].notna().any():
            # the spread of the sampled answers' rewards around the step's mean: the signal GRPO
            # learns from (a step whose samples all score the same teaches nothing)
            mean, std = df["train_reward_mean"], df["train_reward_std"]
            reward_ax.fill_between(steps, (mean - std).clip(lower=0), (mean + std), color="C0", alpha=0.15,
                                   label="train reward ± std (samples)")
        _draw_metric(reward_ax, df, checkpoints_df, train_col="train_reward_mean", valid_col="valid_reward_mean",
                     full_col="full_valid_reward_mean", name="reward", window=window)
        _finish_axis(reward_ax, df, ylabel="mean reward (grader)", title="Reward", total_steps=total_steps)
        _draw_metric(length_ax, df, checkpoints_df, train_col="train_completion_tokens",
                     valid_col="valid_completion_tokens", full_col="full_valid_completion_tokens",
                     name="answer tokens", window=window)
        _finish_axis(length_ax, df, ylabel="tokens per answer", title="Answer length", total_steps=total_steps)
        _draw_metric(errors_ax, df, checkpoints_df, train_col="train_grader_errors", valid_col="valid_grader_errors",
                     full_col="full_valid_grader_errors", name="grader errors", window=0, checkpoint_lines=False)
        _finish_axis(errors_ax, df, ylabel="answers the grader could not score", title="Grader errors",
                     total_steps=total_steps)
        errors_ax.set_ylim(bottom=0)
    else:
        fig = Figure(figsize=(12, 4.2), layout="constrained")
        loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        panels = ((loss_ax, "train_loss", "valid_loss", "full_valid_loss", "loss"),
                  (acc_ax, "train_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy",
                   "token accuracy"))
        for ax, train_col, valid_col, full_col, name in panels:
            _draw_metric(ax, df, checkpoints_df, train_col=train_col, valid_col=valid_col, full_col=full_col,
                         name=name, window=window)
            _finish_axis(ax, df, ylabel=name, title=name.capitalize(), total_steps=total_steps)
        if "accuracy" in acc_ax.get_ylabel():
            acc_ax.set_ylim(top=1.0)
    if title:
        fig.suptitle(title)
    return fig
