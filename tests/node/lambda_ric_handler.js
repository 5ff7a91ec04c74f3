// lambda_ric_handler.js: a Node Lambda handler for AWS's runtime interface
// client (aws-lambda-ric), which lambda_spec runs against lambda_emulator.js
// to show the emulator speaks the Runtime API as Lambda does. It reports as
// failed every Kinesis record whose data is JSON with "fail": true, and
// echoes the trace id and remaining time it was given so the spec can check
// the headers arrived.
'use strict'

exports.handler = async (event, context) => {
  const batchItemFailures = []
  for (const r of event.Records || []) {
    const doc = JSON.parse(Buffer.from(r.kinesis.data, 'base64').toString('utf8'))
    if (doc.fail) batchItemFailures.push({ itemIdentifier: r.kinesis.sequenceNumber })
  }
  return {
    batchItemFailures,
    trace: process.env._X_AMZN_TRACE_ID || null,
    requestId: context.awsRequestId,
    remainingMs: context.getRemainingTimeInMillis()
  }
}
