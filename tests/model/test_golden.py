"""Golden float64 forward of the tiny model: any change of the numerics shows up here.

To regenerate after an intended change of the model (initialisation, layers, embedding), run

    python tests/model/test_golden.py

and paste the printed literals into GOLDEN below; say in the change why the numbers moved. The
original formulation (``model.first_guess: false``, GOLDEN_ABSOLUTE) must not move: old checkpoints
load into it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_config, make_inputs

from atmorep.model import build_model

GOLDEN = {  # with the first guess
    "t": ([-0.006983541428944334, -0.21910949931964085, -0.09488859009447574, -0.47814842720684747,
           -0.02152807974516005, 0.018252351362663677, 0.08982309172089825, -0.07305429106585774],
          -60.57704732442939, 270.90793284685935),
    "u": ([-0.18370436030944437, -0.006242187182169859, 0.25157163526645054, 0.7388727204770663,
           0.11046500548789992, -0.2978857082905689, 0.24311354037967733, 0.18406509239637753],
          -17.916786095435437, 136.14641873938237),
}
GOLDEN_ABSOLUTE = {  # model.first_guess: false, the original formulation
    # field: (first 8 values of the flattened ensemble mean, sum of the mean, sum of the spread)
    "t": ([0.12277580966428356, 0.03094369259078468, 0.07810945334988524, -0.0960070903823908,
           0.17618035185355085, -0.14299829533088476, -0.16362872992577837, 0.1513105389504536],
          -12.066223143635291, 244.09971885952672),
    "u": ([0.3084045532072812, -0.6184295332128149, 0.14394356968349728, -0.30066471770918485,
           -0.28776892279691896, 0.05357283457296701, -0.07778776504151558, 0.11244925785136853],
          0.1731736117497067, 129.57979558405134),
}


def golden_forward(first_guess: bool = True) -> dict[str, tuple[list[float], float, float]]:
    """The tiny two-field model, initialised with seed 0, in float64, on fixed inputs."""
    config = make_config(cross_heads=1, qk_norm=True, first_guess=first_guess)
    torch.manual_seed(0)
    model = build_model(config).double().eval()
    tokens, modes, alpha = make_inputs(config, batch=2, seed=7, dtype=torch.float64)
    with torch.no_grad():
        output = model(tokens, modes, alpha)
    return {name: (p.mean.flatten()[:8].tolist(), float(p.mean.sum()), float(p.spread.sum()))
            for name, p in output.fields.items()}


@pytest.mark.parametrize("first_guess", [True, False])
def test_golden_forward(first_guess: bool) -> None:
    result = golden_forward(first_guess)
    golden = GOLDEN if first_guess else GOLDEN_ABSOLUTE
    assert result.keys() == golden.keys()
    for name, (head, total, spread) in golden.items():
        got_head, got_total, got_spread = result[name]
        torch.testing.assert_close(torch.tensor(got_head, dtype=torch.float64),
                                   torch.tensor(head, dtype=torch.float64), rtol=0, atol=1e-10)
        assert abs(got_total - total) < 1e-10 and abs(got_spread - spread) < 1e-10


if __name__ == "__main__":
    for field_name, (head_values, mean_sum, spread_sum) in golden_forward().items():
        first, second = (", ".join(map(repr, part)) for part in (head_values[:4], head_values[4:]))
        print(f"    {field_name!r}: ([{first},\n           {second}],\n"
              f"          {mean_sum!r}, {spread_sum!r}),")
