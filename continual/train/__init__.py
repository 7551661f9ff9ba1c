"""The training loop of one stage and the seeding of stages."""
