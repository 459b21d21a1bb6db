import sys

from ahn.cli import main

sys.exit(main())
