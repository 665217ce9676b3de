"""nnrun's sweeper and submitit launchers, where Hydra looks for plugins (configs/hydra/sweeper,
configs/hydra/launcher). The implementation and its invariants: nnrun.sweeps.plugins. The
`experiment` config group's source (file names listed, only the selected file parsed) is in
experiments.py."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from nnrun.sweeps.plugins import SubmititMixin, SweeperMixin


class NnrunSweeper(SweeperMixin, BasicSweeper):
    """Hydra's basic sweeper that finishes every batch whatever fails (see SweeperMixin)."""


class NnrunLocalLauncher(SubmititMixin, LocalLauncher):
    """`hydra/launcher=submitit_local`: each job in its own process, failures really fail."""


class NnrunSlurmLauncher(SubmititMixin, SlurmLauncher):
    """`hydra/launcher=submitit_slurm` (and `slurm`): failures really fail, GPUs are used."""
