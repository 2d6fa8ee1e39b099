// Action group + the three log search alert rules over AppTraces in the workspace.
// The queries match the message prefixes defined in shared/events.py (NEW_FAILURE_EVENT,
// RUN_SUMMARY_EVENT): "<prefix> <compact JSON>". tests/infra checks that they still do, and
// parses every query with Microsoft's Kusto language service against the AppTraces schema.

@description('Resource id of the Log Analytics workspace that receives the app\'s AppTraces.')
param logAnalyticsWorkspaceId string

@description('Azure region of the alert rules (the workspace\'s region).')
param location string = resourceGroup().location

@description('Tags applied to the action group and the rules.')
param tags object = {}

@description('Name prefix of the alert rules.')
param namePrefix string

@description('Name of the action group.')
param actionGroupName string

@description('Email addresses notified by the action group. May be empty: the alerts still fire and show in Azure Monitor.')
param alertEmailAddresses array = []

@description('Name of the audited Function app, shown in the alert descriptions.')
param functionAppName string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'certaudit'
    enabled: true
    emailReceivers: [for (address, i) in alertEmailAddresses: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

// (1) One alert per resource that newly fails the client-certificate audit.
// Stateless (autoMitigate false) and window == frequency, so each record alerts exactly once.
resource newFailureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}new-failure'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Client certificate audit: new failure'
    description: 'A web app or slot newly fails the incoming client certificate audit (${functionAppName}). One alert per resource (split on ResourceId).'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    autoMitigate: false
    // AppTraces only exists in the workspace after the app's first log record.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
AppTraces
| where Message startswith_cs "ClientCertAudit.NewFailure "
| extend e = parse_json(substring(Message, strlen("ClientCertAudit.NewFailure ")))
| extend ResourceId = tostring(e.ResourceId)
| extend AppName = tostring(e.AppName)
| extend Slot = iff(isempty(tostring(e.Slot)), "(production)", tostring(e.Slot))
| extend ClientCertMode = tostring(e.ClientCertMode)
| project TimeGenerated, ResourceId, AppName, Slot, ClientCertMode, SubscriptionId = tostring(e.SubscriptionId), ResourceGroup = tostring(e.ResourceGroup), Kind = tostring(e.Kind), Status = tostring(e.Status), Reason = tostring(e.Reason), RunId = tostring(e.RunId)
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'ResourceId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'AppName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Slot'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'ClientCertMode'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (2) The audit did not run: no run summary in the last 26 hours (daily schedule + 2 h slack).
// Stateful (autoMitigate true): one notification, resolved by the next run summary.
resource missedRunAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}missed-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Client certificate audit: did not run'
    description: 'No ClientCertAudit.RunSummary from ${functionAppName} in the last 26 hours: the nightly audit did not run or did not finish.'
    severity: 1
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    // The query filters the last 26 h itself; the rule must let it look that far back.
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
AppTraces
| where TimeGenerated > ago(26h)
| where Message startswith_cs "ClientCertAudit.RunSummary "
| summarize Runs = count()
'''
          timeAggregation: 'Total'
          metricMeasureColumn: 'Runs'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (3) A run finished but could not read every subscription (or failed outright): its results
// are incomplete, and resources in the unread subscriptions were not audited.
resource incompleteRunAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}incomplete-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Client certificate audit: subscriptions failed'
    description: 'A run of ${functionAppName} reported subscriptions it could not read (Outcome partial or failed): the audit is incomplete.'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    autoMitigate: false
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '''
AppTraces
| where Message startswith_cs "ClientCertAudit.RunSummary "
| extend e = parse_json(substring(Message, strlen("ClientCertAudit.RunSummary ")))
| extend Outcome = tostring(e.Outcome)
| extend SubscriptionsFailed = iff(gettype(e.SubscriptionsFailed) == "array", tolong(array_length(e.SubscriptionsFailed)), tolong(e.SubscriptionsFailed))
| where SubscriptionsFailed > 0 or Outcome != "complete"
| project TimeGenerated, RunId = tostring(e.RunId), Outcome, SubscriptionsFailed, SubscriptionsRead = tostring(e.SubscriptionsRead), Total = tolong(e.Total)
'''
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'RunId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Outcome'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

@description('Resource id of the action group.')
output actionGroupId string = actionGroup.id

@description('Names of the alert rules.')
output alertRuleNames array = [
  newFailureAlert.name
  missedRunAlert.name
  incompleteRunAlert.name
]
