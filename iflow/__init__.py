"""iflow: identifiable generative modelling (flows and VAEs with conditional exponential-family priors).

Modules are imported where needed (``from iflow.runs import train``) so that the
command line starts without loading torch. See README.md for the tour.
"""

__version__ = "0.1.0"
