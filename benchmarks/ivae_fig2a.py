"""The iVAE paper's Fig. 2a protocol and what each ingredient contributes (iflow.experiments.ivae_fig2a).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ivae_fig2a.py --seeds 1 2 3     # benchmarks/ivae_fig2a.md
    OMP_NUM_THREADS=1 python benchmarks/ivae_fig2a.py --settings paper --seeds 1

Options and the row cache (benchmarks/ivae_fig2a_rows.json) as in benchmarks/noise.py.
The authors' own code on the data of their own generator, beside iflow's iVAE: benchmarks/ivae_authors.py.
"""

from noise import main

if __name__ == "__main__":
    main("ivae_fig2a")
