"""What the history is worth: the dialogue model trained with it and without it, side by side.

    python benchmarks/dialogue_history.py            (the train --task dialogue configuration)
    python benchmarks/dialogue_history.py --quick    (a smoke run of a few seconds)

Both runs use the configuration of ``python -m mmt_numpy train --task dialogue``
(:class:`mmt_numpy.tasks.dialogue.DialogueConfig`, same seed, same scenes, images, dialogues and
initial weights); the only difference is what the model reads.  **With history**: every earlier
question and answer, then the current question, with turn and speaker embeddings.  **Without**:
the current question alone.  A question that says "it" then cannot be resolved: the model can
only guess among what the image offers (the colours of its shapes, their places, a shape on
that side of some other).  Each model answers every held-out turn by greedy decoding; the table
gives exact-match accuracy per question kind, on the questions that need the history, and on
those by how many turns back the shape was named.
"""

from __future__ import annotations

import argparse
import time

from mmt_numpy.tasks import dialogue as task


def run(with_history: bool, quick: bool, seed: int) -> tuple[dict[str, tuple[float, int]], float]:
    """Train one model and score it: ``({group: (accuracy, count)}, seconds)``."""
    config = task.DialogueConfig(
        **{**(task.QUICK if quick else {}), "seed": seed, "with_history": with_history}
    )
    with task.blas_threads(config.blas_threads):
        start = time.perf_counter()
        result = task.train_dialogue(config, log=lambda line: None)
        score = task.answer_questions(result.model, result.test_set)
    groups = task.accuracy_by_kind(result.test_set, score)
    test = result.test_set
    back = test.turn - test.named_at
    for k in (1, 2, 3):
        rows = (test.named_at >= 0) & (back == k)
        if rows.any():
            groups[f"'it' named {k} turn{'s' if k > 1 else ''} back"] = (
                float(score.correct[rows].mean()),
                int(rows.sum()),
            )
    groups["all turns"] = (score.accuracy, len(test))
    return groups, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[bool, dict[str, tuple[float, int]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the --quick configuration (seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights (default 0)")
    args = parser.parse_args(argv)
    results, seconds = {}, {}
    for with_history in (True, False):
        results[with_history], seconds[with_history] = run(with_history, args.quick, args.seed)
    print(f"{'held-out turns':<28} {'count':>6} {'with history':>13} {'without':>9}")
    for group, (accuracy, count) in results[True].items():
        without = results[False][group][0]
        print(f"{group:<28} {count:>6} {accuracy:>13.4f} {without:>9.4f}")
    print(f"training and scoring time: {seconds[True]:.0f}s with history, {seconds[False]:.0f}s without")
    return results


if __name__ == "__main__":
    main()
