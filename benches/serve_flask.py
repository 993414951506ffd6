"""The comparison server for `serve_bench.py`: a minimal Flask app of the reference
container's kind (SageMaker's XGBoost container answers /ping and /invocations from
Flask under gunicorn, scoring with XGBoost's own predictor).

    gunicorn -w 2 -k gthread --threads 4 -b 127.0.0.1:PORT 'serve_flask:app'

Environment: XGB_MODEL (default benches/data/xgb_ref.json). CSV in, one probability per
line out, like `bms serve`.
"""

import io
import os

import numpy as np
import xgboost as xgb
from flask import Flask, Response, request

HERE = os.path.dirname(os.path.abspath(__file__))
booster = xgb.Booster()
booster.load_model(os.environ.get("XGB_MODEL", os.path.join(HERE, "data", "xgb_ref.json")))
booster.set_param({"nthread": 1})

app = Flask(__name__)


@app.get("/ping")
def ping():
    return Response(status=200)


@app.post("/invocations")
def invocations():
    body = request.get_data()
    if not body:
        return Response(status=204)
    try:
        x = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as e:
        return Response(f"cannot parse CSV: {e}\n", status=400, mimetype="text/plain")
    p = booster.inplace_predict(x)
    return Response("".join(f"{v!r}\n" for v in p.tolist()), mimetype="text/csv")
