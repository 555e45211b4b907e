from .service.launcher import entry

entry()
