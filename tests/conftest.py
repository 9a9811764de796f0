"""Hypothesis profiles for the property tests. `make test` and CI use "ci": derandomized (the same examples every run,
so the suite cannot fail by chance on code that did not change). `make fuzz` selects "fuzz" (HYPOTHESIS_PROFILE=fuzz):
fresh random examples and many more of them; a failure it finds prints its reproduction blob and becomes an
`@example(...)` beside its test."""
import os

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=100, derandomize=True, **_common)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 2000)), derandomize=False, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
