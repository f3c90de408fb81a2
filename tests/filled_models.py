"""Networks filled by the parity fixture's deterministic rule (fill_rule.py beside the fixtures), for the
tests that compare engines and backends on the same known weights."""
from __future__ import annotations

import sys
import warnings

import fastmetro


def filled_model(variant, assets_dir, parity_dir, seed: int = 0):
    """`variant` built from `assets_dir`, every parameter and buffer filled by fill_(model, seed), eval mode."""
    sys.path.insert(0, str(parity_dir))
    from fill_rule import fill_

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        return fill_(fastmetro.build_model(variant, assets_dir=assets_dir), seed).eval()
