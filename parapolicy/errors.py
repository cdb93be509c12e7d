"""Exception types: every user-facing failure is one of these, with one clear message."""


class ParapolicyError(Exception):
    """Base class for errors raised on bad input or unsupported configurations."""


class SamplerConfigError(ParapolicyError, ValueError):
    """An unknown sampler name, or a setting outside its valid range."""


class UnsupportedSchedulerError(ParapolicyError, TypeError):
    """The noise scheduler has no step rule parapolicy can run in parallel."""


class NonFiniteSampleError(ParapolicyError, FloatingPointError):
    """Sampling produced NaN or inf even with the plain sequential loop."""
