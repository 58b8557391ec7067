"""`python -m wae_deploy.cli`: the command line."""

from wae_deploy.cli import main

main()
