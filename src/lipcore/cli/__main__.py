from lipcore.cli import main

main()
