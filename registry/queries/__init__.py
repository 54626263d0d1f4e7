"""Registry Stored Query (ITI-18): parameter parsing and SQLAlchemy Core builders.

- `registry.queries.values`: the value syntax of one `rim:Value` (ITI TF-2a §3.18.4.1.2.3.5).
- `registry.queries.params`: which parameters each stored query takes; `parse_parameters`.
- `registry.queries.selects`: `select()` builders and predicates over `registry.schema`.
- `registry.queries.plans`: each of the 14 stored queries as a sans-I/O plan of selects.

Only `registry.store.read` executes them.
"""

from registry.queries.params import SPECS, StoredQuery, parse_parameters
from registry.queries.plans import Plan, Step, plan_for

__all__ = ["SPECS", "Plan", "Step", "StoredQuery", "parse_parameters", "plan_for"]
