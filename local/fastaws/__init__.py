"""The local stack's fast backend: DynamoDB, DynamoDB Streams and SQS in memory, answering boto3 in-process."""
