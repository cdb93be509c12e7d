"""Exception types: every user-facing failure is one of these, with one clear message."""

import unicodedata


def escape_controls(text: str) -> str:
    """``text`` with control and format characters (terminal escapes, bidi overrides, newlines)
    written as Python escapes, so a name read from a file cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if unicodedata.category(ch) not in ("Cc", "Cf") else repr(ch)[1:-1] for ch in text)


class ParapolicyError(Exception):
    """Base class for errors raised on bad input or unsupported configurations.

    Messages often quote what a file holds; their control characters are escaped here, once
    for every error, whatever quoted them."""

    def __init__(self, *args):
        super().__init__(*(escape_controls(a) if isinstance(a, str) else a for a in args))


class SamplerConfigError(ParapolicyError, ValueError):
    """An unknown sampler name, or a setting outside its valid range."""


class UnsupportedSchedulerError(ParapolicyError, TypeError):
    """The noise scheduler has no step rule parapolicy can run in parallel."""


class NonFiniteSampleError(ParapolicyError, FloatingPointError):
    """Sampling produced NaN or inf even with the plain sequential loop."""


class ObservationError(ParapolicyError, ValueError):
    """The observation dict does not match what the policy was trained on."""


class EnvPairingError(ObservationError):
    """A checkpoint and an env that do not fit each other: image vs low-dim observations, absolute
    vs delta actions, or an action size the env does not take. The message names both sides."""


class CheckpointError(ParapolicyError, ValueError):
    """The file or directory is not a checkpoint parapolicy can load, or is damaged."""


class UntrustedCheckpointError(CheckpointError):
    """The checkpoint references code outside the allow-list; opt in with trust_checkpoint=True."""


class AccelerationError(ParapolicyError, ValueError):
    """An unknown acceleration mode, or one the policy's device cannot run (graphs need CUDA)."""


class InputError(ParapolicyError, ValueError):
    """An argument other than the observation (generator, initial guess, ...) is not what the call expects."""


class RolloutConfigError(ParapolicyError, ValueError):
    """A rollout setting out of range (n_episodes, vector mode, sweep file) or an env without a checkpoint."""


class PrefixError(ParapolicyError, ValueError):
    """A known action prefix (real-time chunking) that does not fit the policy or the sampler."""


class ControllerConfigError(ParapolicyError, ValueError):
    """A Controller setting outside its valid range (mode, control rate, chunk length, delay)."""
