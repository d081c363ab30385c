"""Per-step overhead of a small ODE solve: y' = y cos t, 16 components, 11 outputs on [0, 10], rtol = atol = 1e-6.

sdekit.odeint (whole state, the default; and per_sample=True on (16, 1)) against torchdiffeq's odeint and
scipy's solve_ivp RK45 in the same run; min of 5 wall times, one thread.  ``python benchmarks/small_ode_overhead.py``.
"""
import time

import numpy as np
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

import sdekit

torch.set_num_threads(1)
f64 = {"dtype": torch.float64}
y0 = torch.ones(16, **f64); t = torch.linspace(0, 10, 11, **f64)
f = lambda t, y: y * torch.cos(t)
def best(fn, n=5):
    ts = []
    for _ in range(n):
        s = time.perf_counter(); fn(); ts.append(time.perf_counter() - s)
    return min(ts)
tol = 1e-6
a = best(lambda: sdekit.odeint(f, y0, t, rtol=tol, atol=tol))
b = best(lambda: torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol))
c = best(lambda: solve_ivp(lambda s, y: y*np.cos(s), (0, 10), np.ones(16), t_eval=np.linspace(0,10,11), rtol=tol, atol=tol))
d = best(lambda: sdekit.odeint(f, y0[:, None], t, rtol=tol, atol=tol, per_sample=True))
sol = sdekit.odeint(f, y0, t, rtol=tol, atol=tol, return_solution=True)
print(f"sdekit whole {a*1e3:.1f} ms (steps {int(sol.steps)}), per-sample {d*1e3:.1f} ms, torchdiffeq {b*1e3:.1f} ms, scipy {c*1e3:.1f} ms")
