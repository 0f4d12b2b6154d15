import math

import pytest
import torch

from emergence_lab import metrics as M


def t(rows):
    return torch.tensor(rows)


def test_exact_match_and_token_accuracy():
    pred = t([[1, 2, 3], [1, 0, 3], [0, 0, 0]])
    tgt = t([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    assert M.exact_match(pred, tgt).tolist() == [1.0, 0.0, 0.0]
    assert M.token_accuracy(pred, tgt).tolist() == pytest.approx([1.0, 2 / 3, 0.0])


@pytest.mark.parametrize(
    ("pred", "target", "distance"),
    [
        ([1, 2, 3, 4], [1, 2, 3, 4], 0),
        ([1, 2, 3, 4], [1, 2, 3, 5], 1),  # one substitution
        ([2, 3, 4, 5], [1, 2, 3, 4], 2),  # shifted: delete 5, insert 1 (Hamming would say 4)
        ([9, 9, 9, 9], [1, 2, 3, 4], 4),
        ([1, 3, 2, 4], [1, 2, 3, 4], 2),  # transposition = two edits in Levenshtein
    ],
)
def test_edit_distance_hand_computed(pred, target, distance):
    got = M.edit_distance(t([pred]), t([target]))
    assert got.item() == pytest.approx(distance / len(target))


def test_edit_distance_batched_equals_rowwise():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (64, 6), generator=g)
    tgt = torch.randint(0, 3, (64, 6), generator=g)
    batched = M.edit_distance(pred, tgt)

    def lev(a, b):
        d = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, y in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
        return d[-1]

    expected = [lev(p.tolist(), q.tolist()) / 6 for p, q in zip(pred, tgt, strict=True)]
    assert batched.tolist() == pytest.approx(expected)


def test_brier_hand_computed():
    # one token, vocab 3, p = softmax(log([0.5, 0.3, 0.2])), target 0
    logits = torch.log(t([[[0.5, 0.3, 0.2]]]))
    expected = (0.5 - 1) ** 2 + 0.3**2 + 0.2**2  # 0.38
    assert M.brier(logits, t([[0]])).item() == pytest.approx(expected)
    # a confident right answer scores 0; a confident wrong one scores 2
    sure = t([[[50.0, 0.0, 0.0]]])
    assert M.brier(sure, t([[0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert M.brier(sure, t([[1]])).item() == pytest.approx(2.0, abs=1e-6)


def test_answer_logprob_and_loss_hand_computed():
    probs = t([[[0.5, 0.5], [0.25, 0.75]]])
    logits = torch.log(probs)
    tgt = t([[0, 1]])
    assert M.answer_logprob(logits, tgt).item() == pytest.approx(math.log(0.5) + math.log(0.75))
    assert M.token_loss(logits, tgt).item() == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)


def test_all_metrics_and_kinds():
    pred = t([[1, 1]])
    logits = torch.zeros(1, 2, 4)
    out = M.all_metrics(pred, logits, t([[1, 2]]))
    assert set(out) == set(M.METRICS)
    assert out["exact_match"].item() == 0.0
    assert out["token_accuracy"].item() == 0.5
    assert out["loss"].item() == pytest.approx(math.log(4))
    assert {"exact_match"} == M.DISCONTINUOUS
