"""Entry points: one ``func.Blueprint`` per trigger family. They translate a trigger's input into a call of
the service layer and its result into settlement; the only modules that import ``azure.functions``."""
