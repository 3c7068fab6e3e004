"""The frames the figures are drawn from: exact statistics on hand-made records."""
import pytest

from replication import plots


def _record(method: str, seed: int, widths: list[int]) -> dict:
    config = {"method": method, "seed": seed, "widths": None, "start_width": 16, "lambda_sim": 0.0,
              "sim_from_round": 1}
    return {"config": config, "final": {"widths": widths}}


def test_width_stats_is_per_method_and_layer_over_seeds_in_record_order():
    records = [_record("random", 0, [20, 30]), _record("firefly", 0, [40, 10]), _record("random", 1, [24, 34]),
               _record("firefly", 1, [44, 18])]
    stats = plots.width_stats(records)
    assert list(stats["method"]) == ["random", "random", "firefly", "firefly"]
    assert list(stats["layer"]) == [1, 2, 1, 2]
    assert list(stats["mean"]) == [22.0, 32.0, 42.0, 14.0]
    assert stats["std"].to_numpy() == pytest.approx([2 ** 1.5, 2 ** 1.5, 2 ** 1.5, 4 * 2 ** 0.5])
    fig = plots.final_widths(stats)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["random", "firefly"]
