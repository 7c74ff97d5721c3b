"""Golden float64 forward of the tiny model: any change of the numerics shows up here.

To regenerate after an intended change of the model (initialisation, layers, embedding), run

    python tests/model/test_golden.py

and paste the printed literals into GOLDEN below; say in the change why the numbers moved. The
original formulation (``model.first_guess: false``, GOLDEN_ABSOLUTE) must not move: old checkpoints
load into it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_config, make_inputs

from atmorep.checkpoint import read_checkpoint
from atmorep.config import resolve_config
from atmorep.model import build_model

GOLDEN = {  # with the first guess
    "t": ([0.5880127976985534, 0.42259077672225304, -0.49854966265244033, -0.8592312914148303,
           -0.8529877638213754, -0.18462929334526867, 0.43534438203100606, -0.19886300203318386],
          -57.4618944840395, 264.8589873899243),
    "u": ([-0.6035121940259208, -0.6292969055073314, 0.15696510723991386, 3.1062882516834582,
           0.21994923672341868, -0.10363469663370134, 0.11118443933975428, -0.287189177019205],
          -17.312876231726676, 134.6480650883138),
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
    return {name: (p.mean.flatten()[:8].tolist(), float(p.mean.sum()),
                   float(p.members.std(dim=1, unbiased=False).sum()))  # spread, divisor E
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


def test_a_format_4_checkpoint_loads_into_the_current_layout_and_gives_the_golden_forward() -> None:
    """``data/golden_v4`` holds the golden model's weights (seed 0, first guess) as checkpoint format 4
    wrote them; the named migrations bring them to the current parameter names, strictly."""
    checkpoint = read_checkpoint(Path(__file__).parent / "data" / "golden_v4")
    config = resolve_config(checkpoint.config)
    model = build_model(config)
    model.load_state_dict(checkpoint.weights, strict=True)
    model = model.double().eval()
    tokens, modes, alpha = make_inputs(config, batch=2, seed=7, dtype=torch.float64)
    with torch.no_grad():
        output = model(tokens, modes, alpha)
    for name, (head, total, _) in GOLDEN.items():
        mean = output.fields[name].mean
        expected = torch.tensor(head, dtype=torch.float64)
        torch.testing.assert_close(mean.flatten()[:8], expected, rtol=0, atol=1e-10)
        assert float(mean.sum()) == pytest.approx(total, rel=1e-10)
