"""`synthsteer student`: does the data teach? A small LM fine-tuned on each training set (real or
synthetic records) and scored on real held-out records.

    config   StudentConfig (flags), StudentTrainConfig (one student's run)
    data     training sets, held-out records, the input/target split
    train    one student through the shared training runner
    score    what it is scored by, and its per-record outputs
    results  the typed results (results.json), torch-free
    report   results.html
    run      the command: every set x size x seed, the untrained student, the results
"""
