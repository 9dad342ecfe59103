"""The old path of `cotforge.train.rewards`, kept while branches written against it land (issue 22)."""
import sys

from cotforge.train import rewards

sys.modules[__name__] = rewards  # the same module object: one registry, patches seen by both names
