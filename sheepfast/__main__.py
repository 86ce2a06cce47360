"""python -m sheepfast: the sheepfast command."""

import sys

from sheepfast.cli import main

sys.exit(main())
