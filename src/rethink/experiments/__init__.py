"""The paper's experiments: declarative grids and presets (`grids`), and the sweep engine (`sweep`)."""
