"""Reference values for aido-tasks' baselines, computed once with scikit-learn.

    ~/pyenv/bin/python tools/reference/tasks_refs.py > aido-tasks/tests/reference/tasks_refs.json

The data are a deterministic formula (no RNG), so the Rust test rebuilds them itself and only the
expected outputs are read from the JSON.
"""
import json, math, sys
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.class_weight import compute_class_weight


def data(n, d, c, phase):
    x = np.zeros((n, d), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        # unbalanced classes: class k has weight k + 1
        k = (i * 7 + phase) % (c * (c + 1) // 2)
        cls = 0
        acc = 0
        for j in range(c):
            acc += j + 1
            if k < acc:
                cls = j
                break
        y[i] = cls
        for j in range(d):
            x[i, j] = np.float32(1.5 * math.sin(0.37 * i + 1.1 * j + phase) + (cls - 1) * (0.8 if j % 2 == 0 else -0.5))
    return x, y


xtr, ytr = data(400, 6, 4, 0)
xte, yte = data(120, 6, 4, 3)
# float64 input: scikit-learn keeps float32 input in float32, which stops ~1e-4 short of the
# optimum; in float64 lbfgs reaches the optimum the Rust solver (f64 throughout) converges to.
lr = LogisticRegression(C=1.0, max_iter=100000, tol=1e-12).fit(xtr.astype(np.float64), ytr)
knn = KNeighborsClassifier(n_neighbors=10).fit(xtr, ytr)
out = {
    "source": f"scikit-learn {sklearn.__version__}, numpy {np.__version__}",
    "n_train": 400, "n_test": 120, "d": 6, "classes": 4,
    "coef": lr.coef_.tolist(),
    "intercept": lr.intercept_.tolist(),
    "proba_test": lr.predict_proba(xte.astype(np.float64)).tolist(),
    "logreg_pred_test": lr.predict(xte.astype(np.float64)).tolist(),
    "knn_pred_test": knn.predict(xte).tolist(),
    "balanced_weights": compute_class_weight("balanced", classes=np.arange(4), y=ytr).tolist(),
    "train_counts": np.bincount(ytr, minlength=4).tolist(),
}
json.dump(out, sys.stdout, indent=1)
