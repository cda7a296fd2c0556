from django.conf import settings


def mode(request):
    """Every page says whether it is the sandbox or the live system."""
    return {"server402_mode": settings.SERVER402_MODE}
