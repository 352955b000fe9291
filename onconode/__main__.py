from onconode.cli import main

if __name__ == "__main__":  # not when multiprocessing imports this module in a receiver process
    raise SystemExit(main())
