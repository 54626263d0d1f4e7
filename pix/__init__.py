"""PIX Manager on the French INS: ITI-8/9/10 (HL7v2 over MLLP) and ITI-44/45/46 (HL7v3 over SOAP)."""
