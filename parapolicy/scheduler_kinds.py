"""The noise schedulers parapolicy runs, named once: checkpoint formats and the Policy read this list.

A bottom-floor module (it imports nothing) so every layer can name the same kinds.
"""

# kind (as a user or a sampler setting names it) -> the diffusers class
SCHEDULER_KINDS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpmsolver": "DPMSolverMultistepScheduler"}
# the kinds a LeRobot config.json can name (its noise_scheduler_type is "DDPM" or "DDIM")
LEROBOT_SCHEDULER_KINDS = ("ddpm", "ddim")
