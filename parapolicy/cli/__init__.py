"""Console entry points. Nothing imports these modules as a library: use ``parapolicy.eval``."""
