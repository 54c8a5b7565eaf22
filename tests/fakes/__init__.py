"""Local fakes of the payment providers: their published endpoints and signature schemes."""
