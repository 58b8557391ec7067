"""`python -m wae_deploy` (what torchrun's -m runs on every rank) is the wae-deploy command line."""

from wae_deploy.cli import main

main()
