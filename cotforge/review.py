"""The old path of `cotforge.io.review`, kept while branches written against it land (issue 22)."""
import sys

from cotforge.io import review

sys.modules[__name__] = review  # the same module object: one registry, patches seen by both names
