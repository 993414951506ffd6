"""Checks deploy/template.yaml as CloudFormation will see it (run by deploy/test.sh).

The SAM transform (aws-sam-translator, what `sam deploy` has CloudFormation apply) turns
the template into plain CloudFormation, written to OUT for cfn-lint: its dependency graph
then includes what SAM adds (the bucket's notification to the function), so a circular
dependency shows as E3004. The contract of the function is then asserted on the
transformed template with its intrinsics evaluated for a few parameter sets: the runtime,
the environment, the S3 notification filter, the three HTTP routes, the table's key, and
that the function's role may do exactly what bms-lambda does and nothing else.

    python check_template.py TEMPLATE OUT.json
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

NO_VALUE = object()
ACCOUNT = "123456789012"
REGION = "eu-central-1"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "bms",
    "AWS::NoValue": NO_VALUE,
}


class NoPolicies:
    """The managed-policy loader SAM asks when a function names managed policies (ours names none)."""

    def load(self):
        return {}


def sam_transform(path: str) -> dict:
    with open(path) as f:
        template = yaml_parse(f.read())
    # What `sam package` does before CloudFormation transforms: the code uploaded.
    template["Resources"]["BmsFunction"]["Properties"]["CodeUri"] = "s3://package-bucket/bootstrap.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return transform(template, {}, NoPolicies())


class Stack:
    """The transformed template with parameters set: evaluates intrinsic functions."""

    def __init__(self, cfn: dict, **params: str):
        self.cfn = cfn
        self.params = {k: str(v.get("Default", "")) for k, v in cfn["Parameters"].items()}
        unknown = set(params) - set(self.params)
        assert not unknown, f"no such parameters: {unknown}"
        self.params.update(params)
        self.conditions = {
            name: self.value(expr) for name, expr in cfn.get("Conditions", {}).items()
        }

    def physical(self, name: str) -> str:
        kind = self.cfn["Resources"][name]["Type"]
        if kind == "AWS::S3::Bucket":
            return f"bms-{name.lower()}-1a2b3c"
        return f"bms-{name}-1A2B3C"

    def ref(self, name: str):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            return self.params[name]
        assert name in self.cfn["Resources"], f"Ref to nothing: {name}"
        return self.physical(name)

    def get_att(self, name: str, attr: str) -> str:
        kind = self.cfn["Resources"][name]["Type"]
        phys = self.physical(name)
        arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{phys}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{phys}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{phys}:*",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{phys}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{phys}",
        }
        assert attr == "Arn" and kind in arns, f"GetAtt {name}.{attr} ({kind})"
        return arns[kind]

    def sub(self, text: str, local: dict) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(local[name])
            if "." in name:
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, x):
        if isinstance(x, list):
            return [v for v in (self.value(i) for i in x) if v is not NO_VALUE]
        if not isinstance(x, dict):
            return x
        if len(x) == 1:
            (k, a), = x.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::GetAtt":
                return self.get_att(*(a.split(".", 1) if isinstance(a, str) else a))
            if k == "Fn::Sub":
                if isinstance(a, str):
                    return self.sub(a, {})
                return self.sub(a[0], {n: self.value(v) for n, v in a[1].items()})
            if k == "Fn::If":
                return self.value(a[1] if self.conditions[a[0]] else a[2])
            if k == "Fn::Select":
                return self.value(a[1])[int(self.value(a[0]))]
            if k == "Fn::Split":
                return self.value(a[1]).split(a[0])
            if k == "Fn::Join":
                return a[0].join(self.value(a[1]))
            if k == "Fn::Equals":
                return self.value(a[0]) == self.value(a[1])
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::And":
                return all(self.value(i) for i in a)
            if k == "Fn::Or":
                return any(self.value(i) for i in a)
            if k == "Condition":
                return self.conditions[a]
            assert not k.startswith("Fn::"), f"intrinsic {k} not evaluated here"
        return {k: v for k, v in ((k, self.value(v)) for k, v in x.items()) if v is not NO_VALUE}

    def resource(self, name: str) -> dict:
        return self.value(self.cfn["Resources"][name])

    def of_type(self, kind: str) -> dict:
        return {n: r for n, r in self.cfn["Resources"].items() if r["Type"] == kind}


def as_list(x):
    return x if isinstance(x, list) else [x]


def role_grants(stack: Stack, role: str) -> dict[str, set[str]]:
    """Every resource the role may act on → the actions, from every policy that names it."""
    r = stack.resource(role)["Properties"]
    assert not r.get("ManagedPolicyArns"), f"managed policies on {role}: {r['ManagedPolicyArns']}"
    docs = [p["PolicyDocument"] for p in r.get("Policies", [])]
    for name in stack.of_type("AWS::IAM::RolePolicy"):
        p = stack.resource(name)["Properties"]
        if p["RoleName"] == stack.physical(role):
            docs.append(p["PolicyDocument"])
    for name in stack.of_type("AWS::IAM::Policy"):
        p = stack.resource(name)["Properties"]
        if stack.physical(role) in p.get("Roles", []):
            docs.append(p["PolicyDocument"])
    grants: dict[str, set[str]] = {}
    for doc in docs:
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow", st
            assert "NotAction" not in st and "NotResource" not in st, st
            for res in as_list(st["Resource"]):
                grants.setdefault(res, set()).update(as_list(st["Action"]))
    return grants


def check(cfn: dict) -> int:
    checks = 0
    functions = cfn["Resources"]
    assert [n for n, r in functions.items() if r["Type"] == "AWS::Lambda::Function"] == ["BmsFunction"]
    cases = [
        dict(),
        dict(Architecture="x86_64", ModelUri="/var/task/model.onnx", Threshold="0.15"),
        dict(OutputBucketName="fleet-results", ModelUri="s3://fleet-models/bms/model-v2.onnx",
             InputPrefix="telemetry/batch/", InputSuffix=".parquet", ResultsPrefix="bms/"),
    ]
    for params in cases:
        s = Stack(cfn, **params)
        p = s.params
        bucket = s.physical("InputBucket")
        table = s.physical("ResultsTable")
        out_bucket = p["OutputBucketName"] or bucket

        fn = s.resource("BmsFunction")["Properties"]
        assert fn["Runtime"] == "provided.al2023" and fn["Handler"] == "bootstrap", fn
        assert fn["Architectures"] == [p["Architecture"]], fn["Architectures"]
        assert fn["Role"] == s.get_att("FunctionRole", "Arn")
        assert 1769 <= int(fn["MemorySize"]) and 60 <= int(fn["Timeout"]) <= 900, fn
        assert fn["Environment"]["Variables"] == {
            "BMS_MODEL": p["ModelUri"],
            "BMS_TABLE": table,
            "BMS_RESULTS_PREFIX": p["ResultsPrefix"],
            "BMS_OUTPUT_BUCKET": p["OutputBucketName"],
            "BMS_THRESHOLD": p["Threshold"],
        }, fn["Environment"]
        checks += 5

        # The bucket's one notification: created objects under the input prefix with the
        # suffix, to this function; the function's own outputs never match it.
        nc = s.resource("InputBucket")["Properties"]["NotificationConfiguration"]
        assert set(nc) == {"LambdaConfigurations"}, nc
        (lc,) = nc["LambdaConfigurations"]
        assert lc["Event"] == "s3:ObjectCreated:*"
        assert lc["Function"] == s.get_att("BmsFunction", "Arn")
        rules = {r["Name"]: r["Value"] for r in lc["Filter"]["S3Key"]["Rules"]}
        assert rules == {"prefix": p["InputPrefix"], "suffix": p["InputSuffix"]}, rules
        if out_bucket == bucket:
            for kind in ("predictions/date=2024-03-01/x.parquet", "events/x.jsonl",
                         "rejects/x.csv", "summaries/x.json", "runs/x/_SUCCESS"):
                assert not (p["ResultsPrefix"] + kind).startswith(p["InputPrefix"])
        perms = [r["Properties"] for r in map(s.value, s.of_type("AWS::Lambda::Permission").values())]
        s3perm = [q for q in perms if q["Principal"] == "s3.amazonaws.com"]
        assert len(s3perm) == 1 and s3perm[0]["SourceAccount"] == ACCOUNT, s3perm
        checks += 3

        # The HTTP API: exactly the three routes, each to the function, IAM-authorised.
        (api_name,) = s.of_type("AWS::ApiGatewayV2::Api")
        body = s.resource(api_name)["Properties"]["Body"]
        routes = {}
        for path, methods in body["paths"].items():
            for method, op in methods.items():
                integ = op["x-amazon-apigateway-integration"]
                assert integ["type"] == "aws_proxy" and s.get_att("BmsFunction", "Arn") in integ["uri"], integ
                assert integ["payloadFormatVersion"] in ("1.0", "2.0"), integ
                assert op.get("security") == [{"AWS_IAM": []}], op
                routes[(method.upper(), path)] = integ["payloadFormatVersion"]
        assert set(routes) == {("POST", "/v1/predict"), ("POST", "/invocations"), ("GET", "/ping")}, routes
        apigw = [q for q in perms if q["Principal"] == "apigateway.amazonaws.com"]
        assert len(apigw) == 3, apigw
        checks += 2

        t = s.resource("ResultsTable")["Properties"]
        assert t["BillingMode"] == "PAY_PER_REQUEST", t
        assert t["KeySchema"] == [{"AttributeName": "request_id", "KeyType": "HASH"}], t
        assert t["AttributeDefinitions"] == [{"AttributeName": "request_id", "AttributeType": "S"}], t
        checks += 1

        # Least privilege: what bms-lambda calls, on what it calls it, nothing more.
        expect = {
            s.get_att("FunctionLogGroup", "Arn"): {"logs:CreateLogStream", "logs:PutLogEvents"},
            f"arn:aws:s3:::{bucket}/{p['InputPrefix']}*": {"s3:GetObject"},
            f"arn:aws:s3:::{out_bucket}/{p['ResultsPrefix']}*": {
                "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"},
            f"arn:aws:s3:::{bucket}": {"s3:ListBucket"},
            f"arn:aws:s3:::{out_bucket}": {"s3:ListBucket"},
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}": {"dynamodb:BatchWriteItem"},
        }
        if p["ModelUri"].startswith("s3://"):
            expect[f"arn:aws:s3:::{p['ModelUri'][5:]}"] = {"s3:GetObject"}
        grants = role_grants(s, "FunctionRole")
        assert grants == expect, json.dumps(
            {"granted": {k: sorted(v) for k, v in grants.items()},
             "expected": {k: sorted(v) for k, v in expect.items()}}, indent=1)
        for res, actions in grants.items():
            assert all("*" not in a for a in actions), (res, actions)
            assert res.count("*") <= 1 and (res.endswith("/*") or "*" not in res or res.endswith(":*")), res
        trust = s.resource("FunctionRole")["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [st["Principal"] for st in trust] == [{"Service": "lambda.amazonaws.com"}], trust
        checks += 3
        print(f"template: {params or 'defaults'}: function, notification, {len(routes)} routes, "
              f"table and {len(grants)} grants as expected")
    return checks


def main() -> None:
    template, out = sys.argv[1], sys.argv[2]
    cfn = sam_transform(template)
    with open(out, "w") as f:
        json.dump(cfn, f, indent=1)
    n = check(copy.deepcopy(cfn))
    print(f"template: {n} passed, 0 failed")


if __name__ == "__main__":
    main()
