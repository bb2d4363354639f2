"""dynasim: a discrete-event simulator of LLM serving for reasoning programs.

Data flows one way: trace -> programs -> policy -> engine -> records -> metrics -> plots.
Modules are named after the thing they hold: :mod:`~dynasim.trace`,
:mod:`~dynasim.arrivals`, :mod:`~dynasim.request`, :mod:`~dynasim.policy`,
:mod:`~dynasim.engine`, :mod:`~dynasim.step_time`, :mod:`~dynasim.profile`,
:mod:`~dynasim.data_record`, :mod:`~dynasim.metrics`, :mod:`~dynasim.simulation`.
"""

__version__ = "0.1.0"
