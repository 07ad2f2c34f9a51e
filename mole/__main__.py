import sys

from mole.cli import main

sys.exit(main())
