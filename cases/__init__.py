"""The built-in case library. Each module listed in MODULES defines a list CASES.

Cases here import frameworks only inside their native functions, so listing and planning
(in the parent process) never import a framework.
"""
MODULES = ("seed", "basic")
