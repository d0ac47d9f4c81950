"""The transfer benchmark (does pretraining pay on new tasks and robots?): its plan and
arithmetic, the arms it trains and evaluates, the demonstrations each arm sees, the paired-seed
statistics, where results were made, and the report with its charts."""
