from rest_framework import serializers

from catalog.models import SERVICE_REFERENCE_PATTERN


class PaymentCreateSerializer(serializers.Serializer):
    serviceId = serializers.RegexField(SERVICE_REFERENCE_PATTERN, max_length=150)
    providerId = serializers.CharField(max_length=64, required=False)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(f"unknown field {', '.join(sorted(unknown))}")
        return attrs


class PaymentPaySerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["balance", "x402"])
