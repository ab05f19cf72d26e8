from mcugen.cli import main

main()
