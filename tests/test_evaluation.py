import pytest
import torch
import torch.nn.functional as F

from emergence_lab.evaluation import evaluate, greedy_answers
from emergence_lab.tasks import Addition, Parity
from emergence_lab.tasks.base import TaskBatch


def oracle(truth: torch.Tensor, vocab: int, wrong_at: set[int] = frozenset(), rows=None):
    """A fake model that predicts the true next token, except at the given positions (and rows)."""

    def model(tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        nxt = truth[:, 1 : t + 1].clone()
        for p in wrong_at:
            if p - 1 < t:
                sel = slice(None) if rows is None else rows
                nxt[sel, p - 1] = (nxt[sel, p - 1] + 1) % vocab
        return F.one_hot(nxt, vocab).float() * 30

    return model


def by_key(scores):
    return {(s.subtask, s.metric): s.value for s in scores}


def test_perfect_model_scores_perfectly():
    task = Addition(digits=3, test_size=64)
    batch = task.eval_batch("test", "cpu")
    scores = by_key(evaluate(oracle(batch.tokens, 12), batch, task.answer_names("test")))
    assert scores[("all", "exact_match")] == 1.0
    assert scores[("all", "token_accuracy")] == 1.0
    assert scores[("all", "edit_distance")] == 0.0
    assert scores[("all", "brier")] == pytest.approx(0.0, abs=1e-6)
    assert scores[("all", "answer_logprob")] == pytest.approx(0.0, abs=1e-6)
    for name in task.answer_names("test"):
        assert scores[(name, "token_accuracy")] == 1.0


def test_one_wrong_position_breaks_exact_match_only_there():
    task = Addition(digits=3, test_size=64)
    batch = task.eval_batch("test", "cpu")
    second = int(batch.answer_pos[1])
    scores = by_key(evaluate(oracle(batch.tokens, 12, {second}), batch, task.answer_names("test")))
    names = task.answer_names("test")
    assert scores[("all", "exact_match")] == 0.0
    assert scores[("all", "token_accuracy")] == pytest.approx(3 / 4)
    assert scores[("all", "edit_distance")] == pytest.approx(1 / 4)
    assert [scores[(n, "token_accuracy")] for n in names] == [1.0, 0.0, 1.0, 1.0]


def test_greedy_decoding_feeds_predictions_back():
    # a model that repeats the previous token: greedy output is the last prompt token, over and over
    def echo(tokens):
        return F.one_hot(tokens, 12).float()

    tokens = torch.tensor([[1, 2, 3, 7, 0, 0, 0]])
    pred = greedy_answers(echo, tokens, torch.tensor([4, 5, 6]))
    assert pred.tolist() == [[7, 7, 7]]


def test_chunking_does_not_change_scores():
    task = Addition(digits=2, test_size=100)
    batch = task.eval_batch("test", "cpu")
    torch.manual_seed(0)
    table = torch.randn(12, 12)

    def bigram(tokens):
        return table[tokens]

    names = task.answer_names("test")
    whole = by_key(evaluate(bigram, batch, names, chunk_size=1000))
    parts = by_key(evaluate(bigram, batch, names, chunk_size=7))
    assert whole.keys() == parts.keys()
    for k in whole:
        assert parts[k] == pytest.approx(whole[k], rel=1e-5)


def test_subtasks_are_scored_separately():
    task = Parity(n_tasks=4, n_bits=8, k=2, test_size=256)
    batch = task.eval_batch("test", "cpu")
    assert isinstance(batch, TaskBatch) and batch.subtask is not None
    wrong_rows = batch.subtask != 0  # right on subtask 0 only
    model = oracle(batch.tokens, task.vocab_size, {int(batch.answer_pos[0])}, rows=wrong_rows)
    scores = by_key(evaluate(model, batch, task.answer_names("test"), task.subtask_names))
    assert scores[("task0", "exact_match")] == 1.0
    assert scores[("task1", "exact_match")] == 0.0
    assert scores[("all", "exact_match")] == pytest.approx((batch.subtask == 0).float().mean().item())


def test_every_score_counts_the_examples_behind_it():
    task = Parity(n_tasks=4, n_bits=8, k=2, test_size=200)
    batch = task.eval_batch("test", "cpu")
    names = task.answer_names("test")
    scores = evaluate(lambda t: torch.zeros(*t.shape, task.vocab_size), batch, names, task.subtask_names)
    n = {(s.subtask, s.metric): s.n_examples for s in scores}
    assert n[("all", "exact_match")] == len(batch) == 200
    per_subtask = torch.bincount(batch.subtask, minlength=len(task.subtask_names)).tolist()
    for name, count in zip(task.subtask_names, per_subtask, strict=True):
        if count:
            assert n[(name, "exact_match")] == count
    assert sum(n[(name, "loss")] for name, c in zip(task.subtask_names, per_subtask, strict=True) if c) == 200
