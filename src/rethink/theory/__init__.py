"""The paper's theory, executable.

- `expressivity`: Theorem 1's two-layer ReLU network with 2n + d weights that fits any labels.
- `kernels`: minimum-norm kernel interpolation (Section 5), fit/predict estimators, feature maps,
  and SGD's implicit bias towards the minimum-norm solution.
- `measures`: complexity measures (Rademacher by randomization, norms, margins, sharpness,
  stability) for models and for the runs in a results store.

Each has a `rethink` command; results go to the `theory` table of the results store.
"""
