"""`mcugen explore`: sweep a space of build configurations, measure each point's accuracy,
flash, RAM and cost, and find the Pareto front (docs/explore.md).

space.py the points; point.py one point (metrics.py its accuracy, measure.py its cost);
sweep.py and cluster.py run them; store.py the directory and resume; results.py the CSV and
JSON; pareto.py the fronts; plots.py, html.py and outputs.py what a person reads."""
from mcugen.explore.job import Interrupted, Sweep, explore

__all__ = ["explore", "Sweep", "Interrupted"]
