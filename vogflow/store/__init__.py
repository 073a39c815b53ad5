"""The MLflow store: where the record lives, opening it safely, and the code state an audit is tied
to."""
