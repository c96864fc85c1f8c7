"""The marketplace's rules, one module per resource, called by the API routes.

Routes parse HTTP and choose status codes; these modules read and write the store, and
refuse what breaks a rule with a `DomainError`. Each can be called (and tested) without HTTP.
"""
