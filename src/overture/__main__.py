import sys

from overture.cli import main

sys.exit(main())
