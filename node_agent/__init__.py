"""The cvm node agent: a Celery worker that launches SEV-SNP guests and attests them."""
