from cvm.cli import app

app()
