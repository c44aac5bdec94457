"""./kqlab grade: check a class's submissions with the project's own tests, safely. See grade/command.py."""
