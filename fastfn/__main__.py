import sys

from fastfn.cli import main

sys.exit(main())
