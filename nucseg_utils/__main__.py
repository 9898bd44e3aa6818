import sys

from nucseg_utils.cli import main

sys.exit(main())
